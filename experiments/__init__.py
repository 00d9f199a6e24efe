"""edgenas: experiments."""
