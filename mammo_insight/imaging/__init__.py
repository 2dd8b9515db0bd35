"""DICOM and PNG decoding, display-correct intensities, breast crop, and the image cache."""
