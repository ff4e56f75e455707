"""The agents (retriever, analyzer, writer) behind one interface, and the registry that finds them."""
