"""Check a SavedModel before running it: a SavedModel is a program, so every op of its graph and of every function
in its library must be a tensor op from the allow-list below, collected from real exports of all 8 archs in 2D
and 3D with every build option (activations, normalizations, upsamplings, logits). Ops that read or write files,
start processes, reach the network or run Python (`ReadFile`, `WriteFile`, `PyFunc`, `MatchingFiles`, `PrintV2`,
`DebugIdentityV2`, ...) are not on it. `saved_model.pb` is parsed as a protocol buffer; nothing in it runs.
"""

from __future__ import annotations

from pathlib import Path

from spine_keras.errors import UserError

# The tensor ops of the `serve` functions of real exports: all 8 archs in 2D and 3D, with every activation,
# normalization and upsampling, softmax or logits, fixed or flexible sides (TF 2.21, Keras 3.15).
EXPORTED_OPS = frozenset(
    {
        "AddV2",
        "ArgMax",
        "BiasAdd",
        "ConcatV2",
        "Const",
        "Conv2D",
        "Conv2DBackpropInput",
        "Conv3D",
        "Conv3DBackpropInputV2",
        "Identity",
        "LeakyRelu",
        "MaxPool",
        "MaxPool3D",
        "Mean",
        "Mul",
        "Neg",
        "NoOp",
        "Pack",
        "ReadVariableOp",
        "Relu",
        "Reshape",
        "ResizeBilinear",
        "Rsqrt",
        "Select",
        "Shape",
        "Sigmoid",
        "Softmax",
        "SquaredDifference",
        "Squeeze",
        "StatefulPartitionedCall",
        "StopGradient",
        "StridedSlice",
        "Sub",
    }
)
# Pure arithmetic and shape ops that other versions of TensorFlow or Keras emit for the same layers.
FUNCTION_OPS = EXPORTED_OPS | {
    "Add",
    "Cast",
    "Exp",
    "ExpandDims",
    "Fill",
    "FusedBatchNormV3",
    "GatherV2",
    "IdentityN",
    "Max",
    "Maximum",
    "Minimum",
    "Pad",
    "PadV2",
    "PartitionedCall",
    "Range",
    "RealDiv",
    "ResizeNearestNeighbor",
    "SelectV2",
    "Slice",
    "Split",
    "SplitV",
    "Sqrt",
    "Square",
    "Sum",
    "Tile",
    "Transpose",
    "Unpack",
    "ZerosLike",
}
# The checkpoint functions TensorFlow writes into every SavedModel (`__inference__traced_save_*`/`_restore_*`, called
# only by the nodes `saver_def` names, for TF1-style loaders and checkpointing; `tf.saved_model.load` restores the
# variables itself) may also use these, and only these, ops: they read and write the SavedModel's own checkpoint.
CHECKPOINT_OPS = frozenset(
    {
        "AssignVariableOp",
        "DisableCopyOnRead",
        "MergeV2Checkpoints",
        "RestoreV2",
        "SaveV2",
        "ShardedFilename",
        "StaticRegexFullMatch",
        "StringJoin",
    }
)
# The outer graph: placeholders, the variables and their initializers, the calls of the signature and saver functions.
GRAPH_OPS = frozenset(
    {
        "AssignVariableOp",
        "Const",
        "NoOp",
        "Placeholder",
        "ReadVariableOp",
        "StatefulPartitionedCall",
        "VarHandleOp",
        "VarIsInitializedOp",
    }
)


def _calls(nodes, library: set[str]) -> set[str]:
    """The library functions that `nodes` call, through a function-valued attribute or as an op of their own."""
    called = {node.op for node in nodes if node.op in library}
    for node in nodes:
        for attr in node.attr.values():
            called.update(f.name for f in [attr.func, *attr.list.func] if f.name)
    return called


def _closure(roots: set[str], calls: dict[str, set[str]]) -> set[str]:
    """`roots` and every function they call, directly or not."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen and name in calls:
            seen.add(name)
            todo.extend(calls[name])
    return seen


def _refused(meta) -> set[str]:
    """The ops of one MetaGraph outside the allow-lists: the saver's functions are held to CHECKPOINT_OPS too,
    every other function (everything `tf.saved_model.load` and `serve` can run) to FUNCTION_OPS only."""
    functions = {f.signature.name: f for f in meta.graph_def.library.function}
    library = set(functions)
    calls = {name: _calls(f.node_def, library) for name, f in functions.items()}
    saver_nodes = {meta.saver_def.save_tensor_name.split(":")[0], meta.saver_def.restore_op_name.split(":")[0]}
    saver = _closure(_calls([n for n in meta.graph_def.node if n.name in saver_nodes], library), calls)
    strict = _closure(library - saver, calls)
    refused = {n.op for n in meta.graph_def.node if n.op not in GRAPH_OPS}
    for name, function in functions.items():
        allowed = FUNCTION_OPS if name in strict else FUNCTION_OPS | CHECKPOINT_OPS
        refused.update(n.op for n in function.node_def if n.op not in allowed and n.op not in library)
    return refused


def read_saved_model(saved_model_dir: Path):
    """The parsed `saved_model.pb` (a protocol buffer; nothing in it runs); UserError if it is not one, holds no
    graph, or is a TensorFlow 1 SavedModel (no object graph: its loader would run the graph's own restore op)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = saved_model_dir / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(path.read_bytes())
    except DecodeError as exc:
        raise UserError(f"'{path}' is not a readable SavedModel ({exc})") from exc
    if not proto.meta_graphs:
        raise UserError(f"'{path}' holds no graph")
    if not all(meta.HasField("object_graph_def") for meta in proto.meta_graphs):
        raise UserError(f"'{path}' is a TensorFlow 1 SavedModel; spine-predict runs only TensorFlow 2 exports")
    return proto


def check_saved_model(saved_model_dir: Path) -> None:
    """UserError naming the ops of the SavedModel that are not on the allow-lists (see the module docstring)."""
    refused = sorted(set().union(*(_refused(meta) for meta in read_saved_model(saved_model_dir).meta_graphs)))
    if refused:
        raise UserError(
            f"SavedModel '{saved_model_dir}' runs ops outside the allow-list of tensor ops ({', '.join(refused[:8])}"
            f"{', ...' if len(refused) > 8 else ''}): it could read or write files or run code; pass --trust-model "
            "only if you trust whoever made it"
        )
