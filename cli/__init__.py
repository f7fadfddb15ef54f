"""The ``feedback-loop`` command line: above stream/, consumers/ and producers/."""
