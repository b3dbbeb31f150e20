"""Lesson 04 exercises (to be written)."""
