"""Rule files: loading and validating ``rules/*.yaml`` (``loading``) and keeping them current (``reloading``)."""
