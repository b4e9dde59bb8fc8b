def greet():
    return "café"  # Latin-1, not UTF-8
