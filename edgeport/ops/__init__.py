"""Custom ops: an eager reference (torch.library custom op + fake kernel) and their lowerings as data.

A leaf under export: these modules import torch and edgeport.ops.registry only (tests/test_architecture.py).
Lowerings are registered beside their ops (registry.py) and applied by edgeport/export.

- disentangled_attention: DeBERTa v1/v2 c2p/p2c relative attention scores; lowerings for ONNX (fast, plain,
  mha, generic), TensorRT (DisentangledAttention_TRT plugin) and TFLite in disentangled_attention_lowerings.
- attention: cached (sliding-window) attention as com.microsoft.GroupQueryAttention (Mistral).
- skip_norm: residual add + RMSNorm as com.microsoft.SkipSimplifiedLayerNormalization (Mistral, Mixtral).
- moe: Mixtral's softmax -> top-k -> renormalise -> SwiGLU experts (com.microsoft.MoE).
- bert_attention: onnxruntime's offline BERT fusions as a graph pass.
"""
