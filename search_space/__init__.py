"""edgenas: search_space."""
