"""One module per family of formats, each mapping what a maintained parser library reads to our text,
sections and offsets. ``ingest.parsing.parse_document`` picks the parser; these modules never see a file they
were not asked to read, and they raise ``DocumentParseError`` for anything a user can act on."""
