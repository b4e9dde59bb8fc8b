/* Lua 5.1 patterns (the manual's section 5.4.1, as LuaJIT 2.1 implements
 * them) with a step budget, for sandboxed code.
 *
 * Why: LuaJIT's string.find/match/gmatch/gsub are C functions, and the
 * sandbox's instruction-count hook never fires inside C. A backtracking
 * pattern such as ("a*"):rep(12) .. "b" against 30000 'a's runs for
 * centuries inside one call that nothing can interrupt, and a gsub whose
 * replacement function calls gsub again recurses on the C stack until it
 * overflows. This matcher:
 *   - charges every start position tried, every character test, every
 *     backtracking step and every recursive call at least one step from
 *     `*steps`, and stops with MNEMO_PATTERN_EBUDGET once they are spent:
 *     the CPU time of a call is O(steps), whatever the pattern (bulk
 *     comparisons and scans of a long set cost one step per 16 bytes);
 *   - bounds its recursion at MNEMO_PATTERN_MAX_DEPTH nested calls ("pattern
 *     too complex", counted as LuaJIT counts them), so the C stack it uses
 *     is bounded too;
 *   - never calls back into anything (no Lua, no libuv: a pure function of
 *     its arguments).
 *
 * Semantics: those of LuaJIT 2.1, including its lazy errors (a malformed
 * part of a pattern is reported only when matching reaches it, so
 * ("b"):find("a%") is no match, ("a"):find("a%") an error), the C locale
 * for %a %c %d %g %l %p %s %u %w %x (bytes >= 0x80 belong to no class) and
 * %z (the NUL byte), back-references to a position capture never matching,
 * and %f treating both ends of the subject as a NUL. One difference: the
 * pattern is exactly `plen` bytes, a NUL in it an ordinary character
 * (LuaJIT stops at the first NUL: the Lua binding cuts the pattern there).
 *
 * Offsets are 0-based byte offsets; `end` is one past the last byte. */
#ifndef MNEMO_PATTERN_H
#define MNEMO_PATTERN_H

#include <stddef.h>
#include <stdint.h>

#define MNEMO_PATTERN_MAX_CAPTURES 32 /* LUA_MAXCAPTURES */
#define MNEMO_PATTERN_MAX_DEPTH 200   /* LuaJIT's LJ_MAX_XLEVEL */

/* The step budget ran out (*steps is then 0). */
#define MNEMO_PATTERN_EBUDGET (-20201)
/* The pattern is malformed; match->error holds Lua's message. */
#define MNEMO_PATTERN_EPATTERN (-20202)

/* Flag: a leading '^' is an ordinary character, not an anchor (what
 * string.gmatch does in Lua 5.1). */
#define MNEMO_PATTERN_CARET_LITERAL 1u

/* Lua's messages for the errors a caller detects on a successful match
 * (using a capture that was never closed, or one that does not exist, as
 * gsub's "%3" with two captures). */
#define MNEMO_PATTERN_MSG_UNFINISHED "unfinished capture"
#define MNEMO_PATTERN_MSG_CAPTURE_INDEX "invalid capture index"

typedef enum mnemo_pattern_capture_kind {
  MNEMO_PATTERN_CAPTURE_STRING = 0,   /* "(...)": subject[start, start+len) */
  MNEMO_PATTERN_CAPTURE_POSITION = 1, /* "()": the offset `start`, len 0 */
  /* Opened and still open when the pattern ended, as in "(a": the match
   * stands, but Lua raises MNEMO_PATTERN_MSG_UNFINISHED if it is used. */
  MNEMO_PATTERN_CAPTURE_UNFINISHED = 2
} mnemo_pattern_capture_kind_t;

typedef struct mnemo_pattern_capture {
  size_t start;
  size_t len;
  mnemo_pattern_capture_kind_t kind;
} mnemo_pattern_capture_t;

typedef struct mnemo_pattern_match {
  size_t start, end; /* the whole match: subject[start, end) */
  int ncaptures;     /* in pattern order, by their opening parenthesis */
  mnemo_pattern_capture_t captures[MNEMO_PATTERN_MAX_CAPTURES];
  const char *error; /* on a negative result: a static message */
} mnemo_pattern_match_t;

/* Searches subject[init, slen) for the first position where pattern
 * matches (only at `init` if the pattern starts with '^', unless
 * MNEMO_PATTERN_CARET_LITERAL is in `flags`). Returns 1 (found, *match
 * filled), 0 (no match; also when init > slen), MNEMO_PATTERN_EBUDGET or
 * MNEMO_PATTERN_EPATTERN. *steps: the budget in, what is left of it out
 * (UINT64_MAX is, in practice, no limit). */
int mnemo_pattern_find(const char *pattern, size_t plen, const char *subject,
                       size_t slen, size_t init, unsigned flags,
                       uint64_t *steps, mnemo_pattern_match_t *match);

/* Plain substring search from `init`: 1 and *pos set, 0 (none, or
 * init > slen) or MNEMO_PATTERN_EBUDGET. Costs 1 + (slen - init + nlen) /
 * 16 steps, charged before searching (memmem is linear). */
int mnemo_pattern_find_plain(const char *needle, size_t nlen,
                             const char *subject, size_t slen, size_t init,
                             uint64_t *steps, size_t *pos);

/* Non-zero if the pattern holds one of ^$*+?.([%- (LuaJIT's test, over all
 * plen bytes, for string.find to search a pattern without them plainly). */
int mnemo_pattern_has_specials(const char *pattern, size_t plen);

#endif
