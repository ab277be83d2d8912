"""Removal evaluations shared by ROAR (Hooker et al. 2019) and ROAD (Rong et al. 2022): options and metrics of the
removal fractions, ROAR's removed-image data and retrainers, and the accuracy-against-fraction curves."""
