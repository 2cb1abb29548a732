"""Small nn.Modules shared by the layers: norms, short convolution, SwiGLU MLP, rotary embeddings."""
