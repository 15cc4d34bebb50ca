"""The method (Pix2Video, docs/METHOD.md): DDIM, injection, the batched engine, the editor, the plain reference."""
