"""Export: ONNX, ONNX Runtime, TensorRT (installed as s2i_fast.export)."""
