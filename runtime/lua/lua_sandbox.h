/* The sandbox's native half: one evaluation of untrusted Lua (a policy file,
 * a decision hook) runs inside mnemo_core.sandbox_run with
 *   - an instruction budget, counted by a C count hook, that cannot be
 *     caught: once spent, every further instruction of that evaluation
 *     raises again (the sandbox's pcall/xpcall re-raise it too), so
 *     `while true do pcall(spin) end` ends;
 *   - a memory limit, enforced by the state's allocator (LuaJIT on x86-64
 *     has no per-state allocator of its own, but lua_setallocf wraps the one
 *     it has): an allocation past the limit fails, the evaluation ends with
 *     "memory limit of N bytes exceeded", and the garbage goes with the next
 *     collection;
 *   - strings' methods resolving to the sandbox's string table (no dump,
 *     patterns with a step limit) for exactly the duration of the call.
 * Nothing of it leaks out: hook, allocator limit and string metatable are
 * restored in C before control is back in Lua, so no host instruction runs
 * under the budget (a Lua-side restore could be interrupted by the hook
 * itself, raising the budget error in host code).
 *
 * C functions that do unbounded work for sandboxed code (pattern matching)
 * cannot be interrupted by the count hook, which never fires inside C: they
 * charge their steps here instead. */
#ifndef MNEMO_LUA_SANDBOX_H
#define MNEMO_LUA_SANDBOX_H

#include <lua.h>
#include <stdint.h>

/* Steps a C function may take for the code running now: what is left of
 * the innermost sandbox run's budget, in steps (MNEMO_SANDBOX_STEPS_PER_
 * INSTRUCTION per instruction), or MNEMO_SANDBOX_UNLIMITED outside a run. */
#define MNEMO_SANDBOX_STEPS_PER_INSTRUCTION 16
#define MNEMO_SANDBOX_UNLIMITED UINT64_MAX
uint64_t mnemo_sandbox_steps_left(lua_State *L);

/* Charges `steps` to the innermost run. Past its budget the run is marked
 * exhausted and the budget error is raised (does not return). Outside a
 * run: does nothing. */
void mnemo_sandbox_charge(lua_State *L, uint64_t steps);

/* True while a sandbox run is in progress. A task must not park inside
 * one: the run's lua_pcall is a C boundary the yield cannot cross, and a
 * wait armed before the failed yield would later resume a task that has
 * moved on. */
int mnemo_sandbox_running(lua_State *L);

/* Adds the sandbox functions to the module table on top of the stack. */
void mnemo_open_sandbox(lua_State *L);

#endif
