"""Operational helpers."""
