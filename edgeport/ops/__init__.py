"""Custom ops: an eager reference (torch.library custom op + fake kernel) and one lowering per target.

- disentangled_attention: DeBERTa v1/v2 c2p/p2c relative attention scores.
- moe: Mixtral's softmax -> top-k -> renormalise -> SwiGLU experts.
"""
