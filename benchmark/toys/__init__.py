"""The embedded world's models, trained by the project on first use and cached: the toy CLIP and its fine-tunes,
the toy VLM and the control encoders."""
