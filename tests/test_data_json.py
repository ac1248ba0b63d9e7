"""YTVIS json reader: records, category mapping, unlabelled sets, one-line validation errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from dvis_attn_pl.data.dataset import annotation_to_gt
from dvis_attn_pl.data.rle import decode_rle, to_compressed_rle
from dvis_attn_pl.data.ytvis_json import YTVISFormatError, load_ytvis_json, parse_ytvis


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def _valid() -> dict:
    m = np.zeros((4, 6), dtype=bool)
    m[1:3, 2:5] = True
    return {
        "videos": [
            {"id": 7, "height": 4, "width": 6, "length": 2, "file_names": ["b/0.jpg", "b/1.jpg"]},
            {"id": 3, "height": 4, "width": 6, "length": 1, "file_names": ["a/0.jpg"]},
        ],
        "categories": [{"id": 9, "name": "trout"}, {"id": 2, "name": "salmon", "cue": "motion"}],
        "annotations": [
            {
                "id": 5,
                "video_id": 7,
                "category_id": 9,
                "iscrowd": 0,
                "segmentations": [_rle(m), None],
                "areas": [6, None],
                "bboxes": [[2, 1, 3, 2], None],
            },
            {
                "id": 1,
                "video_id": 3,
                "category_id": 2,
                "segmentations": [[[2.0, 1.0, 5.0, 1.0, 5.0, 3.0, 2.0, 3.0]]],
            },
        ],
    }


def _write(tmp_path, obj, name="gt.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_records_sorted_and_category_mapping(tmp_path):
    data = load_ytvis_json(_write(tmp_path, _valid()))
    assert [v.id for v in data.videos] == [3, 7]
    assert data.videos[1].file_names == ("b/0.jpg", "b/1.jpg")
    assert [c.id for c in data.categories] == [2, 9]
    assert data.dataset_id_to_contiguous == {2: 0, 9: 1}
    assert data.contiguous_to_dataset_id == [2, 9]
    assert data.thing_classes == ["salmon", "trout"]
    assert data.categories[0].extra == {"cue": "motion"}
    assert [a.id for a in data.annotations] == [1, 5]
    by_video = data.annotations_by_video()
    assert [a.id for a in by_video[7]] == [5] and [a.id for a in by_video[3]] == [1]
    assert data.annotations[0].iscrowd == 0  # default when missing


def test_ground_truth_form(tmp_path):
    data = load_ytvis_json(_write(tmp_path, _valid()))
    gt = annotation_to_gt(data.annotations[1], data.video(7))
    assert gt["category_id"] == 9 and gt["id"] == 5
    assert gt["segmentations"][1] is None and gt["areas"] == [6.0, None]
    assert isinstance(gt["segmentations"][0]["counts"], str)
    assert decode_rle(gt["segmentations"][0]).sum() == 6
    # polygons are rasterised at the video size, areas computed when the json has none
    poly = annotation_to_gt(data.annotations[0], data.video(3))
    assert poly["areas"][0] == decode_rle(poly["segmentations"][0]).sum() > 0
    assert poly["bboxes"][0] is not None


def test_uncompressed_rle_is_compressed():
    m = np.zeros((5, 4), dtype=bool)
    m[1:4, 1] = True
    flat = m.flatten(order="F").astype(np.uint8)
    runs, current, count = [], 0, 0
    for v in flat:  # build the uncompressed counts the slow way, as YTVIS releases store them
        if v == current:
            count += 1
        else:
            runs.append(count)
            current, count = v, 1
    runs.append(count)
    rle = to_compressed_rle({"size": [5, 4], "counts": runs}, 5, 4)
    assert isinstance(rle["counts"], str)
    assert np.array_equal(decode_rle(rle), m)
    assert to_compressed_rle(None, 5, 4) is None and to_compressed_rle([], 5, 4) is None


@pytest.mark.parametrize("key", ["absent", "null"])
def test_unlabelled(tmp_path, key):
    obj = _valid()
    if key == "absent":
        del obj["annotations"]
    else:
        obj["annotations"] = None
    data = load_ytvis_json(_write(tmp_path, obj))
    assert data.annotations is None and not data.has_annotations
    assert data.annotations_by_video() == {3: [], 7: []}


def test_length_defaults_to_file_names():
    obj = _valid()
    del obj["videos"][0]["length"]
    assert parse_ytvis(obj).video(7).length == 2


def _mutate(fn):
    obj = copy.deepcopy(_valid())
    fn(obj)
    return obj


CASES = {
    "not json": (None, "not valid JSON"),
    "no videos": (lambda o: o.pop("videos"), "missing field 'videos'"),
    "no categories": (lambda o: o.pop("categories"), "missing field 'categories'"),
    "video id missing": (lambda o: o["videos"][0].pop("id"), "videos[0]: missing field 'id'"),
    "height missing": (lambda o: o["videos"][0].pop("height"), "videos[0] (id 7): missing field 'height'"),
    "width missing": (lambda o: o["videos"][1].pop("width"), "videos[1] (id 3): missing field 'width'"),
    "file_names missing": (lambda o: o["videos"][0].pop("file_names"), "missing field 'file_names'"),
    "duplicate video": (lambda o: o["videos"][1].update(id=7), "duplicate video id 7"),
    "length mismatch": (
        lambda o: o["videos"][0].update(length=3),
        "file_names has 2 entries but length is 3",
    ),
    "bad height": (lambda o: o["videos"][0].update(height="4"), "field 'height' must be an integer"),
    "duplicate category": (lambda o: o["categories"][1].update(id=9), "duplicate category id 9"),
    "category name missing": (lambda o: o["categories"][0].pop("name"), "missing field 'name'"),
    "duplicate annotation": (lambda o: o["annotations"][1].update(id=5), "duplicate annotation id 5"),
    "unknown video": (lambda o: o["annotations"][0].update(video_id=99), "video_id 99 is not a video"),
    "unknown category": (
        lambda o: o["annotations"][0].update(category_id=4),
        "category_id 4 is not in categories",
    ),
    "segmentations length": (
        lambda o: o["annotations"][0]["segmentations"].append(None),
        "'segmentations' has 3 entries but the video has 2 frames",
    ),
    "segmentations missing": (
        lambda o: o["annotations"][0].pop("segmentations"),
        "missing field 'segmentations'",
    ),
    "areas length": (lambda o: o["annotations"][0].update(areas=[1]), "'areas' has 1 entries"),
    "rle size": (
        lambda o: o["annotations"][0]["segmentations"][0].update(size=[5, 6]),
        "has size [5, 6] but the video is [4, 6]",
    ),
    "annotations not a list": (
        lambda o: o.update(annotations={"a": 1}),
        "field 'annotations' must be a list",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_validation_errors_are_one_line_and_name_the_file(tmp_path, name):
    fn, expected = CASES[name]
    path = tmp_path / "bad.json"
    if fn is None:
        path.write_text('{"videos": [')
    else:
        path.write_text(json.dumps(_mutate(fn)))
    with pytest.raises(YTVISFormatError) as info:
        load_ytvis_json(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ": "), message
    assert expected in message, message
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(YTVISFormatError, match="file not found") as info:
        load_ytvis_json(tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(info.value)


def test_empty_entries_mean_absent(tmp_path):
    obj = _valid()
    obj["annotations"][0]["segmentations"] = [{}, []]
    obj["annotations"][0].pop("areas")
    obj["annotations"][0].pop("bboxes")
    data = load_ytvis_json(_write(tmp_path, obj))
    gt = annotation_to_gt(data.annotations[1], data.video(7))
    assert (
        gt["segmentations"] == [None, None] and gt["areas"] == [None, None] and gt["bboxes"] == [None, None]
    )


def test_byte_order_mark_is_accepted(tmp_path):
    """Some Windows tools write a UTF-8 byte-order mark; the evaluator's reader accepts it too."""
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_valid()).encode())
    assert [v.id for v in load_ytvis_json(path).videos] == [v.id for v in load_ytvis_json(_write(tmp_path, _valid())).videos]


def test_compressed_rle_check_accepts_what_pycocotools_encodes():
    from dvis_attn_pl.data.rle import check_compressed_rles, invalid_compressed_rles

    rng = np.random.default_rng(3)
    counts, pixels = [], []
    for h, w, p in [(1, 1, 0.5), (5, 7, 0.5), (64, 96, 0.05), (64, 96, 0.95), (300, 200, 0.5)] * 20:
        mask = rng.random((h, w)) < p
        counts.append(_rle(mask)["counts"])
        pixels.append(h * w)
    for value in (0, 1):  # one run only: all background, all foreground
        counts.append(_rle(np.full((720, 1280), value, dtype=bool))["counts"])
        pixels.append(720 * 1280)
    big = mask_utils.frPyObjects({"size": [1000, 1000], "counts": [999_000, 1000]}, 1000, 1000)
    counts.append(big["counts"].decode())  # multi-character run lengths
    pixels.append(1000 * 1000)
    assert invalid_compressed_rles(counts, pixels).tolist() == []
    assert invalid_compressed_rles([c.encode() for c in counts], pixels).tolist() == []
    invalid, areas = check_compressed_rles(counts, pixels)  # the same decoding gives pycocotools' area
    assert not invalid.any()
    assert areas.tolist() == [int(mask_utils.area({"size": [1, p], "counts": c})) for c, p in zip(counts, pixels)]


def test_compressed_rle_check_bounds_run_lengths_at_seven_characters():
    """A run length may be padded with zero groups up to 7 characters (35 bits: any 32-bit run of
    pycocotools); an 8th character is refused, however the runs add up."""
    from dvis_attn_pl.data.rle import check_compressed_rles

    padded = {k: "`Q" + "P" * (k - 3) + "0" for k in (2, 7, 8)}  # the single run 48 in k characters
    padded[2] = "`1"
    invalid, areas = check_compressed_rles([padded[2], padded[7], padded[8]], [48, 48, 48])
    assert invalid.tolist() == [False, False, True]
    assert areas[:2].tolist() == [0, 0]


def test_compressed_rle_check_refuses_corrupt_counts(monkeypatch):
    from dvis_attn_pl.data import rle

    good = _rle(np.eye(6, 8, dtype=bool))["counts"]
    cases = [good, "!!!!", good[:-1], good + "0", "", "zzzz", good, good.replace(good[1], "~", 1)]
    cases.append(good[:1] + "\u00e9" + good[2:])  # a non-ASCII character where a valid one was
    pixels = [48] * len(cases)
    pixels[6] = 49  # a valid string for another mask size
    assert rle.invalid_compressed_rles(cases, pixels).tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rle.invalid_compressed_rles([c.encode("utf-8") for c in cases], pixels).tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    monkeypatch.setattr(rle, "_CHUNK_CHARS", 5)  # the same answer when decoded in many chunks
    assert rle.invalid_compressed_rles(cases, pixels).tolist() == [1, 2, 3, 4, 5, 6, 7, 8]


def test_corrupt_rle_counts_name_the_annotation_and_frame(tmp_path):
    data = _valid()
    data["annotations"][0]["segmentations"][0]["counts"] = "!!!!"
    with pytest.raises(YTVISFormatError, match=r"annotations\[0\] \(id 5\): segmentations\[0\] is not a valid compressed RLE"):
        load_ytvis_json(_write(tmp_path, data))


def test_run_length_encoding_matches_pycocotools_character_for_character():
    """Uncompressed runs (zero runs, one run, runs needing several characters, an empty list) encode
    as pycocotools encodes them, and decode back to their areas."""
    from dvis_attn_pl.data.rle import check_compressed_rles, encode_run_lengths

    rng = np.random.default_rng(5)
    lists, sizes = [], []
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        cuts = np.sort(rng.integers(0, h * w + 1, int(rng.integers(0, 14))))
        lists.append(np.diff(np.r_[0, cuts, h * w]).tolist())
        sizes.append((h, w))
    lists += [[0, 999_000, 1000], [2**32 - 1]]
    sizes += [(1000, 1000), (1, 2**32 - 1)]
    flat = np.array([r for runs in lists for r in runs], dtype=np.int64)
    got = encode_run_lengths(flat, [len(runs) for runs in lists])
    expected = [
        mask_utils.frPyObjects({"size": [h, w], "counts": runs}, h, w)["counts"].decode()
        for runs, (h, w) in zip(lists, sizes)
    ]
    assert got == expected
    invalid, areas = check_compressed_rles(got, [h * w for h, w in sizes])
    assert not invalid.any()
    assert areas.tolist() == [sum(runs[1::2]) for runs in lists]
    assert encode_run_lengths(np.zeros(0, dtype=np.int64), [0]) == [""]
