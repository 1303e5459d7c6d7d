"""The one model of Argo (and of kai-flows' own annotations on Argo objects) that every layer reads."""
