#include "host.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <luv/luv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua_luv.h"
#include "lua_mnemo.h"
#include "lua_runtime.h"

/* Signal watchers keep `data` NULL, as all of mnemo's handles do (luv
 * treats a non-NULL data as its own); the host is found by container. */
typedef struct host_signal {
  uv_signal_t handle;
  struct host *host;
} host_signal_t;

typedef struct host {
  uv_loop_t loop;
  host_signal_t sigint;
  host_signal_t sigterm;
  lua_State *L;
  mnemo_rt_t *rt;
  int signal_exit; /* 128 + signal number, or 0 */
} host_t;

static void on_signal(uv_signal_t *handle, int signum) {
  host_t *host = ((host_signal_t *)handle)->host;
  if (host->signal_exit == 0)
    host->signal_exit = 128 + signum;
  uv_stop(&host->loop);
}

static int watch_signal(host_t *host, host_signal_t *sig, int signum) {
  int rc = uv_signal_init(&host->loop, &sig->handle);
  if (rc != 0)
    return rc;
  sig->handle.data = NULL;
  sig->host = host;
  rc = uv_signal_start(&sig->handle, on_signal, signum);
  /* A signal watcher alone must not keep the process running. */
  uv_unref((uv_handle_t *)&sig->handle);
  return rc;
}

static int file_exists(const char *path) {
  return access(path, F_OK) == 0;
}

/* Prepends DIR/?.lua;DIR/?/init.lua to package.path for the first
 * directory that holds mnemo's Lua files: $MNEMO_LUA_DIR, then ../lua and
 * ../share/mnemo/lua next to the executable. */
static void add_lua_path(lua_State *L) {
  char exe[PATH_MAX], candidate[PATH_MAX + 64];
  const char *chosen = getenv("MNEMO_LUA_DIR");
  ssize_t n;
  char *slash;

  if (chosen == NULL || *chosen == '\0') {
    chosen = NULL;
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
      exe[n] = '\0';
      slash = strrchr(exe, '/');
      if (slash != NULL)
        *slash = '\0';
      static const char *const relative[] = {"/../lua", "/../share/mnemo/lua"};
      for (size_t i = 0; i < sizeof(relative) / sizeof(*relative); i++) {
        snprintf(candidate, sizeof(candidate), "%s%s/mnemo/init.lua", exe,
                 relative[i]);
        if (file_exists(candidate)) {
          snprintf(candidate, sizeof(candidate), "%s%s", exe, relative[i]);
          chosen = candidate;
          break;
        }
      }
    }
  }
  if (chosen == NULL)
    return;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", chosen, chosen,
                  lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
}

static void preload(lua_State *L, const char *name, lua_CFunction open) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, open);
  lua_setfield(L, -2, name);
  lua_pop(L, 2);
}

/* `arg` as the standalone luajit sets it: the script at index 0, the
 * interpreter and its options at negative indices, script arguments from 1.
 * The script arguments are also pushed, for the chunk's `...`. */
static int push_args(lua_State *L, const mnemo_host_options_t *options) {
  int i, nargs = 0;
  lua_createtable(L, options->argc - options->script_index - 1,
                  options->script_index + 1);
  for (i = 0; i < options->argc; i++) {
    lua_pushstring(L, options->argv[i]);
    lua_rawseti(L, -2, i - options->script_index);
  }
  lua_setglobal(L, "arg");
  for (i = options->script_index + 1; i < options->argc; i++, nargs++)
    lua_pushstring(L, options->argv[i]);
  return nargs;
}

/* mnemo's log lines are buffered (lua/mnemo/log.lua): log.finish writes
 * the failure summary still open and every buffered line. Called before an
 * error's message (the lines that led to it come first) and before
 * lua_close (never from a finalizer: see log.lua). */
static void flush_logs(lua_State *L) {
  int top = lua_gettop(L);
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "loaded");
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "mnemo.log");
      if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "finish");
        if (lua_isfunction(L, -1))
          (void)lua_pcall(L, 0, 0, 0);
      }
    }
  }
  lua_settop(L, top);
}

static void report(lua_State *L, const char *program, const char *message) {
  if (L != NULL)
    flush_logs(L);
  fprintf(stderr, "%s: %s\n", program, message);
  fflush(stderr);
}

/* Loads the chunk onto L's stack, or reports why not and returns the exit
 * code to use. */
static int load_script(lua_State *L, const mnemo_host_options_t *options) {
  int status;
  if (options->code != NULL) {
    status = luaL_loadbuffer(L, options->code, strlen(options->code),
                             "=(command line)");
  } else {
    FILE *probe = fopen(options->script, "r");
    if (probe == NULL) {
      fprintf(stderr, "%s: cannot open %s: %s\n", options->program,
              options->script, strerror(errno));
      return MNEMO_EXIT_USAGE;
    }
    fclose(probe);
    status = luaL_loadfile(L, options->script);
  }
  if (status != 0) {
    report(L, options->program, lua_tostring(L, -1));
    lua_pop(L, 1);
    return MNEMO_EXIT_ERROR;
  }
  return MNEMO_EXIT_OK;
}

/* --policy FILE: load it (watched, so edits and SIGHUP reload it) before
 * the script runs. A broken file at start is an error: there is no older
 * policy to keep. */
static int load_policy(host_t *host, const mnemo_host_options_t *options) {
  lua_State *L = host->L;
  int rc;
  lua_pushcfunction(L, mnemo_rt_traceback);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "mnemo.policy");
  rc = lua_pcall(L, 1, 1, -3);
  if (rc == 0) {
    lua_getfield(L, -1, "load");
    lua_pushstring(L, options->policy);
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "watch");
    rc = lua_pcall(L, 2, 2, -5);
    if (rc == 0 && lua_isnil(L, -2)) {
      report(L, options->program, lua_tostring(L, -1));
      lua_settop(L, 0);
      return MNEMO_EXIT_ERROR;
    }
  }
  if (rc != 0) {
    report(L, options->program, lua_tostring(L, -1));
    lua_settop(L, 0);
    return MNEMO_EXIT_ERROR;
  }
  lua_settop(L, 0);
  return MNEMO_EXIT_OK;
}

static int start_lua(host_t *host) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return UV_ENOMEM;
  host->L = L;
  luaL_openlibs(L);
  /* luv must learn about our loop before it opens, or it makes its own. */
  luv_set_loop(L, &host->loop);
  preload(L, "luv", mnemo_luv_open);
  preload(L, "mnemo_core", luaopen_mnemo_core);
  add_lua_path(L);
  host->rt = mnemo_rt_get(L);
  host->rt->hosted = 1;
  return 0;
}

static void close_if_open(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

/* Order matters. luv's close callbacks call into Lua, so every luv handle
 * is closed and its callback run while the state is alive; only then is
 * the state closed, and the loop last. Callbacks run during this may open
 * new handles, hence a few rounds. */
static void shutdown_host(host_t *host) {
  int round;
  uv_close((uv_handle_t *)&host->sigint.handle, NULL);
  uv_close((uv_handle_t *)&host->sigterm.handle, NULL);
  if (host->L != NULL) {
    flush_logs(host->L);
    mnemo_rt_close(host->rt);
    for (round = 0; round < 8; round++) {
      mnemo_luv_close_all(host->L);
      if (uv_run(&host->loop, UV_RUN_NOWAIT) == 0)
        break;
    }
    lua_close(host->L);
    host->L = NULL;
  }
  uv_run(&host->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&host->loop) == UV_EBUSY) {
    /* Handles nobody owns any more (should not happen): close them. */
    uv_walk(&host->loop, close_if_open, NULL);
    uv_run(&host->loop, UV_RUN_DEFAULT);
    uv_loop_close(&host->loop);
  }
}

int mnemo_host_run(const mnemo_host_options_t *options) {
  host_t host;
  lua_State *co;
  int rc, nargs, exit_code = MNEMO_EXIT_OK;

  memset(&host, 0, sizeof(host));
  rc = uv_loop_init(&host.loop);
  if (rc != 0) {
    report(NULL, options->program, uv_strerror(rc));
    return MNEMO_EXIT_ERROR;
  }
  if ((rc = watch_signal(&host, &host.sigint, SIGINT)) != 0 ||
      (rc = watch_signal(&host, &host.sigterm, SIGTERM)) != 0 ||
      (rc = start_lua(&host)) != 0) {
    report(NULL, options->program, uv_strerror(rc));
    shutdown_host(&host);
    return MNEMO_EXIT_ERROR;
  }

  if (options->policy != NULL)
    exit_code = load_policy(&host, options);
  if (exit_code == MNEMO_EXIT_OK)
    exit_code = load_script(host.L, options);
  if (exit_code == MNEMO_EXIT_OK) {
    /* The script runs as the main task, so it may sleep and wait. */
    co = lua_newthread(host.L);
    lua_insert(host.L, -2);
    lua_xmove(host.L, co, 1);
    nargs = push_args(host.L, options);
    lua_xmove(host.L, co, nargs);
    mnemo_rt_resume(host.rt, co, nargs);
    if (!host.rt->failed)
      uv_run(&host.loop, UV_RUN_DEFAULT);
    lua_pop(host.L, 1); /* the main task */

    if (host.signal_exit != 0) {
      exit_code = host.signal_exit;
    } else if (mnemo_rt_take_error(host.rt, host.L)) {
      report(host.L, options->program, lua_tostring(host.L, -1));
      lua_pop(host.L, 1);
      exit_code = MNEMO_EXIT_ERROR;
    }
  }
  shutdown_host(&host);
  return exit_code;
}
