"""dnninfer: fast, cheap DNN inference on heterogeneous hardware."""
__version__ = "0.1.0"
