"""edgenas: searchers."""
