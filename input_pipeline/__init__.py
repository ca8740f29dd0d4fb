"""Data: readers, splits, TFRecord shards, video decoding, face detection and tracking, tf.data."""
