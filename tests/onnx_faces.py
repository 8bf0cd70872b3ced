"""Tiny random ONNX models laid out as insightface's face models, for tests (needs `onnx`):

* `detector(path)`: SCRFD's interface (input [1, 3, 640, 640]; per stride 8 / 16 / 32 the scores [N, 1] after a
  sigmoid, box distances [N, 4] and keypoint offsets [N, 10], N = cells x 2 anchors, in that output order);
* `recognizer(path, normalises_inside)`: ArcFace's (input [1, 3, 112, 112] -> [1, 512]); with
  `normalises_inside` its graph starts with Sub and Mul nodes, which insightface reads as "feed raw pixels".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(nodes, inputs, outputs, initializers, path: Path) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _tensor(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def detector(path: Path, seed: int = 0, score_bias: float = -1.0) -> Path:
    """Per stride s: a conv of kernel and stride s from the (normalised) image, reshaped to anchors."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    outputs = {"score": [], "bbox": [], "kps": []}
    for s in (8, 16, 32):
        for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
            name = f"{kind}_{s}"
            weight = rng.standard_normal((2 * width, 3, s, s)) / (s * np.sqrt(3))
            bias = np.full(2 * width, score_bias) if kind == "score" else rng.uniform(1, 3, 2 * width)
            initializers += [_tensor(f"{name}_w", weight), _tensor(f"{name}_b", bias)]
            initializers.append(helper.make_tensor(f"{name}_shape", TensorProto.INT64, [2], [-1, width]))
            conv = [f"{name}_w", f"{name}_b"]
            nodes.append(
                helper.make_node("Conv", ["input.1", *conv], [f"{name}_conv"], kernel_shape=[s, s], strides=[s, s])
            )
            nodes.append(helper.make_node("Transpose", [f"{name}_conv"], [f"{name}_t"], perm=[0, 2, 3, 1]))
            activation = "Sigmoid" if kind == "score" else ("Abs" if kind == "bbox" else "Identity")
            nodes.append(helper.make_node(activation, [f"{name}_t"], [f"{name}_a"]))
            nodes.append(helper.make_node("Reshape", [f"{name}_a", f"{name}_shape"], [name]))
            cells = (640 // s) ** 2 * 2
            outputs[kind].append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [cells, width]))
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])
    return _save(nodes, [image], outputs["score"] + outputs["bbox"] + outputs["kps"], initializers, path)


def recognizer(path: Path, seed: int = 1, normalises_inside: bool = False, dim: int = 512) -> Path:
    """A conv of kernel and stride 8, then a dense layer to `dim` values."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, initializers, source = [], [], "data"
    if normalises_inside:
        initializers += [_tensor("mean", [127.5]), _tensor("scale", [1 / 127.5])]
        nodes += [
            helper.make_node("Sub", ["data", "mean"], ["centred"], name="Sub_0"),
            helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="Mul_1"),
        ]
        source = "scaled"
    initializers += [
        _tensor("conv_w", rng.standard_normal((8, 3, 8, 8)) / 14),
        _tensor("dense_w", rng.standard_normal((8 * 14 * 14, dim)) / 40),
        _tensor("dense_b", rng.standard_normal(dim) * 0.1),
    ]
    nodes += [
        helper.make_node("Conv", [source, "conv_w"], ["conv"], kernel_shape=[8, 8], strides=[8, 8], name="Conv_2"),
        helper.make_node("Flatten", ["conv"], ["flat"], name="Flatten_3"),
        helper.make_node("Gemm", ["flat", "dense_w", "dense_b"], ["embedding"], name="Gemm_4"),
    ]
    image = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, dim])
    return _save(nodes, [image], [out], initializers, path)
