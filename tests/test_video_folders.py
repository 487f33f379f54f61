"""Tests of `load_video_folder` on UCF-101, metadata.csv and frame-folder formats written by the tests."""

import logging

import av
import datasets
import numpy as np
import pytest
from PIL import Image

from flashvideo.data import LoadReport, load_video_folder, video_folders
from flashvideo.data.video_folders import caption_from_class_name, resize_and_center_crop
from flashvideo.video_io import export_to_video


def numbered_frames(count: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Flat gray frames whose level encodes the frame index (10 * i + 20)."""
    levels = (10 * np.arange(count) + 20).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def frame_indices(frames: np.ndarray) -> list[int]:
    return [round(float(frame.mean() - 20) / 10) for frame in frames]


def write_avi(path, frames: np.ndarray, fps: int = 25) -> None:
    """An MPEG-4 Part 2 AVI, as UCF-101 ships (xvid)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_truncated_mp4(path, frames: np.ndarray) -> None:
    export_to_video(frames, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_caption_from_class_name():
    assert caption_from_class_name("ApplyEyeMakeup") == "apply eye makeup"
    assert caption_from_class_name("YoYo") == "yo yo"
    assert caption_from_class_name("HandstandPushups") == "handstand pushups"
    assert caption_from_class_name("playing_guitar") == "playing guitar"
    assert caption_from_class_name("riding-a-bike") == "riding a bike"
    assert caption_from_class_name("PlayingTV") == "playing tv"
    assert caption_from_class_name("UCFTest") == "ucf test"


def test_ucf101_format(tmp_path):
    root = tmp_path / "ucf"
    (root / "ApplyEyeMakeup").mkdir(parents=True)
    (root / "PlayingGuitar").mkdir()
    write_avi(root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi", numbered_frames(10))
    write_avi(root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g02_c01.avi", numbered_frames(12))
    write_avi(root / "PlayingGuitar" / "v_PlayingGuitar_g01_c01.avi", numbered_frames(9, 48, 64))
    (root / "PlayingGuitar" / "notes.txt").write_text("not a video")

    dataset, report = load_video_folder(root, num_frames=8, image_size=16)
    assert isinstance(report, LoadReport)
    assert (report.num_ok, report.num_skipped) == (3, 0)
    assert dataset.column_names[:2] == ["video", "text"]
    assert dataset["text"] == ["apply eye makeup", "apply eye makeup", "playing guitar"]
    assert dataset["file_name"][2] == "PlayingGuitar/v_PlayingGuitar_g01_c01.avi"
    videos = dataset[:]["video"]
    assert videos.shape == (3, 8, 16, 16, 3) and videos.dtype == np.uint8
    assert frame_indices(videos[2]) == list(range(8))

    dataset.save_to_disk(str(tmp_path / "saved"))
    reloaded = datasets.load_from_disk(str(tmp_path / "saved"))
    np.testing.assert_array_equal(reloaded[:]["video"], videos)
    assert reloaded["text"] == dataset["text"]

    templated, _ = load_video_folder(
        root, folder_format="ucf101", num_frames=4, image_size=16, caption_template="a person doing {label}"
    )
    assert templated["text"][2] == "a person doing playing guitar"


def test_metadata_format(tmp_path):
    root = tmp_path / "meta"
    (root / "clips").mkdir(parents=True)
    export_to_video(numbered_frames(8), root / "clips" / "b.mp4")
    export_to_video(numbered_frames(8), root / "a.mp4")
    (root / "metadata.csv").write_text(
        "file_name,text,extra\n"
        'clips/b.mp4,"a dog, running",1\n'
        "a.mp4,a cat sleeping,2\n"
        "gone.mp4,never written,3\n"
    )
    dataset, report = load_video_folder(root, num_frames=6, image_size=32)
    assert dataset["file_name"] == ["a.mp4", "clips/b.mp4"]
    assert dataset["text"] == ["a cat sleeping", "a dog, running"]
    assert dataset[0]["video"].shape == (6, 32, 32, 3)
    assert (report.num_ok, report.num_missing, report.num_skipped) == (2, 1, 1)
    assert report.skipped_files[0].endswith("gone.mp4")

    (root / "metadata.csv").unlink()
    (root / "metadata.jsonl").write_text('{"file_name": "a.mp4", "text": "from jsonl"}\n')
    dataset, _ = load_video_folder(root, folder_format="metadata", num_frames=6, image_size=32)
    assert dataset["text"] == ["from jsonl"]
    # `layout=` was the folder format's old name; the word now means only the vocabulary layout.
    with pytest.warns(FutureWarning, match="folder_format"):
        old, _ = load_video_folder(root, layout="metadata", num_frames=6, image_size=32)
    assert old._fingerprint == dataset._fingerprint


def write_frame_folder(folder, count: int, height: int = 24, width: int = 24) -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(numbered_frames(count, height, width)):
        # Unpadded numbers: natural sorting must put frame_2 before frame_10.
        Image.fromarray(frame).save(folder / f"frame_{i}.png")


def test_frame_folders_with_default_text(tmp_path):
    root = tmp_path / "bair"
    write_frame_folder(root / "traj_0", 12)
    write_frame_folder(root / "traj_1", 12, 30, 20)
    write_frame_folder(root / "traj_2", 3)
    dataset, report = load_video_folder(
        root, num_frames=4, stride=3, start=1, image_size=16, text="a robot arm"
    )
    assert dataset["text"] == ["a robot arm", "a robot arm"]
    assert dataset["file_name"] == ["traj_0", "traj_1"]
    for video in dataset[:]["video"]:
        assert video.shape == (4, 16, 16, 3)
        assert frame_indices(video) == [1, 4, 7, 10]  # PNG is lossless: exact sampling
    assert (report.num_ok, report.num_too_short) == (2, 1)
    assert report.skipped_files == [str(root / "traj_2")]

    with pytest.raises(ValueError, match="text"):
        load_video_folder(root, folder_format="frames", num_frames=4)


def test_frame_folders_with_metadata_captions(tmp_path):
    root = tmp_path / "frames"
    write_frame_folder(root / "clip_a", 5)
    write_frame_folder(root / "clip_b", 5)
    (root / "metadata.csv").write_text("file_name,text\nclip_b,second clip\nclip_a,first clip\n")
    dataset, report = load_video_folder(root, num_frames=5, image_size=24)
    assert dataset["text"] == ["first clip", "second clip"] and report.num_skipped == 0
    np.testing.assert_array_equal(dataset[0]["video"], numbered_frames(5, 24, 24))


def test_broken_and_short_files_are_skipped_counted_and_logged(tmp_path, caplog):
    root = tmp_path / "mixed" / "Juggling"
    root.mkdir(parents=True)
    export_to_video(numbered_frames(10), root / "good.mp4")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    write_truncated_mp4(root / "truncated.mp4", numbered_frames(24))
    export_to_video(numbered_frames(4), root / "short.mp4")
    bad_frames = tmp_path / "mixed_frames" / "broken"
    write_frame_folder(bad_frames, 6)
    (bad_frames / "frame_2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)

    with caplog.at_level(logging.WARNING):
        dataset, report = load_video_folder(tmp_path / "mixed", folder_format="ucf101", num_frames=8, image_size=16)
    assert len(dataset) == 1 and dataset["file_name"] == ["Juggling/good.mp4"]
    assert (report.num_ok, report.num_skipped, report.num_corrupt, report.num_too_short) == (1, 3, 2, 1)
    assert sorted(p.rsplit("/", 1)[-1] for p in report.skipped_files) == [
        "random.mp4",
        "short.mp4",
        "truncated.mp4",
    ]
    assert "4 of the 8 frames" in report.reasons[str(root / "short.mp4")]
    assert "3 skipped (2 corrupt, 1 too short" in caplog.text and "random.mp4" in caplog.text

    dataset, report = load_video_folder(tmp_path / "mixed_frames", num_frames=4, image_size=16, text="x")
    assert len(dataset) == 0 and report.num_corrupt == 1
    assert dataset.features["video"].shape == (4, 16, 16, 3)


def test_resize_and_center_crop():
    # Vertical stripes: red on the left, green in the middle, blue on the right of an 80-wide frame.
    frame = np.zeros((1, 48, 80, 3), np.uint8)
    frame[..., :12, 0] = 255
    frame[..., 12:68, 1] = 255
    frame[..., 68:, 2] = 255
    out = resize_and_center_crop(frame, 32)
    assert out.shape == (1, 32, 32, 3) and out.dtype == np.uint8
    # 48x80 → 32x53, centre crop keeps original columns ≈ 16..64: only green remains.
    assert out[..., 1].min() > 200 and out[..., 0].max() < 40 and out[..., 2].max() < 40
    # Upscaling works too, and a square input keeps its content.
    assert resize_and_center_crop(np.zeros((2, 10, 14, 3), np.uint8), 20).shape == (2, 20, 20, 3)
    same = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_and_center_crop(same, 16), same)
    with pytest.raises(ValueError, match="image_size"):
        resize_and_center_crop(same, 0)


def test_non_square_video_is_resized_and_cropped(tmp_path):
    root = tmp_path / "wide" / "Surfing"
    root.mkdir(parents=True)
    frames = np.zeros((6, 48, 80, 3), np.uint8)
    frames[..., :12, 0] = 250
    frames[..., 12:68, 1] = 250
    frames[..., 68:, 2] = 250
    write_avi(root / "v.avi", frames)
    dataset, _ = load_video_folder(tmp_path / "wide", num_frames=6, image_size=32)
    video = dataset[0]["video"]
    assert video.shape == (6, 32, 32, 3)
    assert video[:, 4:-4, 4:-4, 1].min() > 200 and video[:, 4:-4, 4:-4, [0, 2]].max() < 40


def test_parallel_loading_matches_serial(tmp_path, monkeypatch):
    root = tmp_path / "par" / "Walking"
    root.mkdir(parents=True)
    for i in range(6):
        export_to_video(numbered_frames(6 + i), root / f"{i}.mp4")
    (root / "bad.mp4").write_bytes(b"nope")
    serial, serial_report = load_video_folder(tmp_path / "par", num_frames=5, image_size=16)
    # Packing into Arrow chunks of 2 clips (instead of 256) must not change anything either.
    monkeypatch.setattr(video_folders, "clips_per_chunk", lambda shape: 2)
    parallel, parallel_report = load_video_folder(
        tmp_path / "par", num_frames=5, image_size=16, num_workers=2
    )
    np.testing.assert_array_equal(serial[:]["video"], parallel[:]["video"])
    assert serial["file_name"] == parallel["file_name"] and serial_report == parallel_report
    assert serial._fingerprint == parallel._fingerprint
    assert parallel.data.column("video").num_chunks == 3 and len(parallel) == 6


def test_bad_roots_formats_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_video_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="Cannot detect the folder format"):
        load_video_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="folder_format must be one of"):
        load_video_folder(tmp_path / "empty", folder_format="kinetics")
    with pytest.raises(ValueError, match="metadata"):
        load_video_folder(tmp_path / "empty", folder_format="metadata")
    for name, value in [
        ("num_frames", 0),
        ("stride", 0),
        ("start", -1),
        ("image_size", 0),
        ("num_workers", 0),
    ]:
        with pytest.raises(ValueError, match=name):
            load_video_folder(tmp_path / "empty", **{name: value})
    with pytest.raises(ValueError, match="caption_template"):
        load_video_folder(tmp_path / "empty", caption_template="no label here")
    (tmp_path / "badmeta").mkdir()
    (tmp_path / "badmeta" / "metadata.csv").write_text("path,caption\na.mp4,x\n")
    with pytest.raises(ValueError, match="file_name"):
        load_video_folder(tmp_path / "badmeta")


def write_declared_png(path, width: int, height: int) -> None:
    """A PNG of a few bytes that declares `width`×`height` pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "side, reason",
    [(14_000, "DecompressionBombError"), (10_000, "10000×10000 pixels, more than PIL.Image.MAX_IMAGE_PIXELS")],
)  # over twice the limit Pillow refuses the image; over the limit it only warns and would decode it all
def test_huge_images_in_frame_folders_are_skipped_as_corrupt(tmp_path, side, reason):
    root = tmp_path / "frames"
    write_frame_folder(root / "good", 4)
    write_frame_folder(root / "bomb", 4)
    write_declared_png(root / "bomb" / "frame_1.png", side, side)
    dataset, report = load_video_folder(root, num_frames=4, image_size=16, text="x")
    assert dataset["file_name"] == ["good"]
    assert (report.num_ok, report.num_corrupt) == (1, 1)
    assert reason in report.reasons[str(root / "bomb")]
