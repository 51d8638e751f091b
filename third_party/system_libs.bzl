"""Debian's system libraries as Bazel targets, found through pkg-config.

Nothing is downloaded: each repository is generated on the fly from what
`pkg-config --libs` says about a library that Debian's -dev packages
installed. Headers live in /usr/include, which the compiler already searches,
so the generated cc_library only carries link options.
"""

def _pkg_config_impl(rctx):
    pkg_config = rctx.which("pkg-config")
    if pkg_config == None:
        fail("pkg-config is not installed: run ./setup.sh")
    args = [pkg_config, "--libs"] + rctx.attr.modules
    result = rctx.execute(args)
    if result.return_code != 0:
        fail("pkg-config could not find %s (%s): run ./setup.sh" % (
            " ".join(rctx.attr.modules),
            result.stderr.strip(),
        ))
    linkopts = result.stdout.strip().split(" ") + rctx.attr.extra_linkopts
    linkopts = [opt for opt in linkopts if opt]
    cflags = rctx.execute([pkg_config, "--cflags"] + rctx.attr.modules)
    defines = [
        flag[2:]
        for flag in cflags.stdout.strip().split(" ")
        if flag.startswith("-D")
    ]
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)
    rctx.file("BUILD.bazel", """\
cc_library(
    name = "lib",
    linkopts = {linkopts},
    defines = {defines},
    visibility = {visibility},
)
""".format(
        linkopts = repr(linkopts),
        defines = repr(defines),
        visibility = repr(rctx.attr.visibility_to),
    ))

pkg_config_library = repository_rule(
    implementation = _pkg_config_impl,
    attrs = {
        "modules": attr.string_list(mandatory = True),
        "extra_linkopts": attr.string_list(default = []),
        # Who may link the library: this is how the layering rules of
        # ARCHITECTURE.md are enforced (raft/core gets no sockets or disks).
        "visibility_to": attr.string_list(default = ["//visibility:public"]),
    },
    local = True,
    doc = "A cc_library named `lib` linking the given pkg-config modules.",
)
