# mk/grammars.mk — tree-sitter grammars as one static archive.
# Included by the top-level Makefile (paths are relative to the repo root).
#
#   $(GRAMMARS_LIB)       build/grammars/libmnemo_grammars.a; link it before
#                         -ltree-sitter (pkg-config --libs tree-sitter).
#   grammars              phony target: fetch + build the archive.
#   grammars-clean        phony target: remove the objects and the archive
#                         (keeps the fetched sources and npm cache).
#   $(GRAMMAR_SRCS)       <lang>/src/parser.c, produced by scripts/fetch-grammars
#                         from the pins in grammars/versions.txt.
#
# Language functions exported by the archive (declare them yourself, e.g.
# `const TSLanguage *tree_sitter_python(void);`):
#   python      tree_sitter_python       (parser.c + scanner.c)
#   javascript  tree_sitter_javascript   (parser.c + scanner.c)
#   c           tree_sitter_c            (parser.c only)
#   lua         tree_sitter_lua          (parser.c + scanner.c)
# All scanners are C; a grammar shipping scanner.cc is rejected.
# All four are LANGUAGE_VERSION 14 (libtree-sitter 0.20.7 accepts 13-14).
#
# Generated code is compiled with warnings off and without the project's
# CFLAGS; override GRAMMAR_CFLAGS to change that.

GRAMMAR_LANGS  := python javascript c lua
GRAMMAR_DIR    := build/grammars
GRAMMARS_LIB   := $(GRAMMAR_DIR)/libmnemo_grammars.a
GRAMMAR_CFLAGS ?= -O2 -fPIC -std=c11 -w
GRAMMAR_STAMP  := $(GRAMMAR_DIR)/.fetched
GRAMMAR_SRCS   := $(foreach l,$(GRAMMAR_LANGS),$(GRAMMAR_DIR)/$(l)/src/parser.c)
# One stamp per language: its objects are in $(GRAMMAR_DIR)/<lang>/obj/.
GRAMMAR_BUILT  := $(foreach l,$(GRAMMAR_LANGS),$(GRAMMAR_DIR)/$(l)/.built)

.PHONY: grammars grammars-clean
grammars: $(GRAMMARS_LIB)

$(GRAMMAR_STAMP): grammars/versions.txt scripts/fetch-grammars
	scripts/fetch-grammars $(GRAMMAR_DIR)
	@touch $@

# parser.c is written by the stamp's recipe.
$(GRAMMAR_SRCS): $(GRAMMAR_STAMP) ;

# Whether a grammar has an external scanner is only known after fetching, so
# each language is compiled by one recipe that looks for scanner.c. Objects
# are named <lang>_parser.o / <lang>_scanner.o so archive members stay distinct.
$(GRAMMAR_DIR)/%/.built: $(GRAMMAR_STAMP)
	@rm -rf $(@D)/obj && mkdir -p $(@D)/obj
	@if [ -e $(@D)/src/scanner.cc ]; then \
	    echo "grammars: $* ships a C++ scanner (scanner.cc); pin a version with scanner.c" >&2; exit 1; fi
	$(CC) $(GRAMMAR_CFLAGS) -I$(@D)/src -c $(@D)/src/parser.c -o $(@D)/obj/$*_parser.o
	@if [ -e $(@D)/src/scanner.c ]; then \
	    echo "$(CC) $(GRAMMAR_CFLAGS) -I$(@D)/src -c $(@D)/src/scanner.c -o $(@D)/obj/$*_scanner.o"; \
	    $(CC) $(GRAMMAR_CFLAGS) -I$(@D)/src -c $(@D)/src/scanner.c -o $(@D)/obj/$*_scanner.o; fi
	@touch $@

$(GRAMMARS_LIB): $(GRAMMAR_BUILT)
	@rm -f $@
	$(AR) rcs $@ $(foreach l,$(GRAMMAR_LANGS),$(GRAMMAR_DIR)/$(l)/obj/*.o)

grammars-clean:
	rm -rf $(GRAMMARS_LIB) $(GRAMMAR_BUILT) $(foreach l,$(GRAMMAR_LANGS),$(GRAMMAR_DIR)/$(l)/obj)
