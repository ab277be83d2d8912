"""Vision-language models (paper section 4.3, Fig. 7, appendix A.4 Tables 3 and 6): attention maps of a LLaVA-style
model over the image for each generated token, and their scoring."""
