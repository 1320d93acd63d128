"""The loops: iteration only, over the step or kernel the planner (`keras_unroll.plan`) gives them.

- `static.static_loop`: a Python `for` (one copy of the step per time step);
- `dynamic.while_loop`: one `tf.while_loop` (one copy, any T);
- `checkpointed.checkpointed_loop`: a while loop whose backward pass recomputes segments from checkpoints
  (`swap_memory`, `recompute`);
- `fused_export.fused_export_loop`: a serving LSTM/GRU in the form TFLite's and ONNX's converters fuse.
"""
