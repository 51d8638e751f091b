"""C++ code generation for lockd's .proto files, fully offline.

rules_proto and cc_grpc_library would download their toolchains, so a genrule
runs Debian's /usr/bin/protoc and /usr/bin/grpc_cpp_plugin directly. Import
paths are relative to proto/ (`import "mvccpb/kv.proto";`) and so are the
generated headers' include paths (`#include "mvccpb/kv.pb.h"`).
"""

def lockd_proto_library(name, src, deps = [], grpc = False, visibility = None):
    """Generates cc_libraries `<name>` and `<name>_pb` from one .proto file.

    Args:
      name: the cc_library's name; `<name>_files` is a filegroup holding the
        .proto file and those of its deps, for protoc's import resolution.
      src: the .proto file, relative to this package.
      deps: other lockd_proto_library names this file imports.
      grpc: also generate gRPC service stubs (.grpc.pb.{h,cc}); they go in
        `<name>`, while `<name>_pb` always holds the messages alone.
      visibility: of the cc_library.
    """
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc"]
    if grpc:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]

    native.filegroup(
        name = name + "_files",
        srcs = [src] + [d + "_files" for d in deps],
    )

    pkg = native.package_name()
    cmd = "/usr/bin/protoc -I%s --cpp_out=$(GENDIR)/%s " % (pkg, pkg)
    if grpc:
        cmd += ("--grpc_out=$(GENDIR)/%s " % pkg +
                "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin ")
    cmd += "$(location %s)" % src

    native.genrule(
        name = name + "_gen",
        srcs = [src, name + "_files"],
        outs = outs,
        cmd = cmd,
        message = "protoc " + src,
    )

    # Messages only (`<name>_pb`): what the state machine may use without
    # linking gRPC.
    native.cc_library(
        name = name + "_pb",
        srcs = [base + ".pb.cc"],
        hdrs = [base + ".pb.h"],
        includes = ["."],
        # Generated code is not ours to keep warning-free.
        copts = ["-w"],
        deps = [d + "_pb" for d in deps] + ["@protobuf//:lib"],
        visibility = visibility,
    )

    # Messages and, with `grpc`, the service stubs.
    native.cc_library(
        name = name,
        srcs = [base + ".grpc.pb.cc"] if grpc else [],
        hdrs = [base + ".grpc.pb.h"] if grpc else [],
        includes = ["."],
        copts = ["-w"],
        deps = [name + "_pb"] + deps + (["@grpc//:lib"] if grpc else []),
        visibility = visibility,
    )
