"""The step images' Dockerfiles, shipped as package data (lint checks an image has one): kai_flows.resources."""
