"""Typed models of clusternet API objects."""
