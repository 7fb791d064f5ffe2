"""The command line on top of both variants: ``pillpipe run threaded|asyncio|sequential``."""
