"""The demo's faces model served: encoded images in, labels out (InferClient and tritonclient)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tritonclient.grpc as triton

from augserve.clients import AsyncInferClient, Classification, InferClient
from augserve.server.inference.demo_faces import (
    FACES_LABELS,
    faces_held_out,
    held_out_accuracy,
    load_faces_split,
)


@pytest.fixture(scope="module")
def client(served):
    with InferClient(served.url, timeout=60) as client:
        yield client


def test_classify_the_held_out_faces(client):
    images, _ = faces_held_out()
    answers = client.classify("faces", images, top_k=2)
    assert len(answers) == len(images)
    for answer in answers:
        assert [c.index for c in answer] in ([0, 1], [1, 0])
        assert [c.label for c in answer] == [FACES_LABELS[c.index] for c in answer]
        assert answer[0].score >= answer[1].score
    accuracy = held_out_accuracy(
        lambda pngs: [answer[0].index for answer in client.classify("faces", pngs)])
    assert accuracy >= 0.9


def test_paths_arrays_and_bytes_classify_alike(client, tmp_path):
    _, _, pixels, _ = load_faces_split()
    images, _ = faces_held_out()
    path = tmp_path / "face.png"
    path.write_bytes(images[0])
    by_bytes = client.classify("faces", images[:1], top_k=2)
    assert client.classify("faces", path, top_k=2) == by_bytes
    assert client.classify("faces", pixels[0], top_k=2) == by_bytes  # uint8 RGB, sent as PNG
    jpeg = cv2.imencode(".jpg", pixels[1])[1].tobytes()
    assert client.classify("faces", [jpeg])[0][0].label in FACES_LABELS


def test_tritonclient_asks_for_the_same_classes(served, client):
    images, _ = faces_held_out()
    tensor = triton.InferInput("image", [3, 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images[:3], dtype=object).reshape(3, 1))
    with triton.InferenceServerClient(served.url) as theirs:
        result = theirs.infer("faces", [tensor],
                              outputs=[triton.InferRequestedOutput("logits", class_count=1)])
    rows = result.as_numpy("logits")
    assert rows.shape == (3, 1)
    ours = client.classify("faces", images[:3])
    for row, answer in zip(rows, ours, strict=True):
        score, index, label = row[0].decode().split(":")
        assert Classification(label, float(score), int(index)) == answer[0]


async def test_async_client_classifies_too(served, client):
    images, _ = faces_held_out()
    async with AsyncInferClient(served.url) as aclient:
        assert await aclient.classify("faces", images[:4]) == client.classify("faces", images[:4])


def test_held_out_accuracy_with_and_without_tta(served, capsys):
    images, labels = faces_held_out()
    tensor = triton.InferInput("image", [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object).reshape(-1, 1))
    accuracy, scores = {}, {}
    with triton.InferenceServerClient(served.url) as theirs:
        for tta in (True, False):
            result = theirs.infer("faces", [tensor], parameters={"tta": tta},
                                  outputs=[triton.InferRequestedOutput("logits", class_count=1)])
            rows = [row[0].decode().split(":") for row in result.as_numpy("logits")]
            accuracy[tta] = float((np.array([int(r[1]) for r in rows]) == labels).mean())
            scores[tta] = np.array([float(r[0]) for r in rows])
    # the parameter took effect: the flipped view moves the merged scores of some images
    assert not np.allclose(scores[True], scores[False], rtol=0, atol=1e-6)
    with capsys.disabled():
        print(f"\nfaces held-out top-1 ({len(labels)} images): TTA (identity + hflip) "
              f"{accuracy[True]:.3f}, without TTA {accuracy[False]:.3f}")
    assert min(accuracy.values()) >= 0.9
