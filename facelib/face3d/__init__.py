"""The 3-D face: the morphable model, cameras and crops, detection, landmarks, the regressors (3DDFA_V2, Deep3D)
and the reconstruction stage that turns a manifest into a coefficient table."""
