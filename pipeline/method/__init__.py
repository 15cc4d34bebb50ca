"""The method (Pix2Video, ALGORITHM.md): DDIM, injection, the batched engine, the editor, the plain reference."""
