"""Keras model builders."""
