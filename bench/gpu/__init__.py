"""GPU decoders of the generative channel's beam search (a Qwen2-shaped model, a static-shape beam,
a per-user KV cache), measured by bench/gpu_decode.py; the serving loop does not use them yet."""
