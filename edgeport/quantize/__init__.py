"""The quantize stage (fp16, int8, int4 per target): not built yet; see the quantization issue."""
