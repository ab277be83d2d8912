"""The toy VLM: a LLaVA-1.5-layout model over the toy CLIP, built on first use into the user cache."""
