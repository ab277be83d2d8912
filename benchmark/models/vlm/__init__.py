"""Vision-language models (paper section 4.3, Fig. 7, appendix A.4 Tables 3 and 6): LLaVA loading, an encoder as
its vision tower, its prompts, and the per-token attention maps over the image."""
