"""Export models to portable formats (ONNX) and run them with other runtimes."""
