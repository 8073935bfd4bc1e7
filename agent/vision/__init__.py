"""Vision: TFLite models (face detection, facial expression) behind one small interface.

This package touches raw frames and faces, so it never imports the publishing code;
only aggregated evidence leaves it. Importing it stays cheap: the TFLite runtime is
imported on the first `load_model`, not here.
"""
