"""Optional integrations with other libraries (``pip install 'dma-ref[doge]'`` for ``doge``)."""
