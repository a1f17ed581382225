"""Decoder accuracy (held-out perplexity of the quantized vs the float artifact): not built yet.

The decoder exports (export/decoders.py: ONNX with KV cache, GroupQueryAttention, MoE) landed while
the quantize stage was being written; scoring them needs their cache I/O contract. Until then
quantizing a text-generation artifact stops here with a clear error instead of writing an artifact
whose accuracy nobody checked.
"""

from edgeport.errors import EdgeportError


def compare(float_sess, quant_sess, manifest, folder) -> dict:
    raise EdgeportError(f"quantizing {manifest.family} text-generation artifacts is not supported yet: "
                        "the held-out perplexity check for decoders is not built (encoders are supported)")
