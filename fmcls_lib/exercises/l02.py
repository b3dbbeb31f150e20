"""Lesson 02 exercises (to be written)."""
