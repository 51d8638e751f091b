#include "lockd/util/flags.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace lockd {
namespace {

TEST(FlagSetTest, Parse_AcceptsGoStyleForms) {
  std::string name = "default";
  std::string dir;
  bool debug = false;
  uint64_t count = 7;
  FlagSet fs("lockd", "");
  fs.String("name", &name, "member name");
  fs.String("data-dir", &dir, "data directory");
  fs.Bool("debug", &debug, "debug logging");
  fs.Uint64("count", &count, "a count");
  const char* argv[] = {"lockd",     "-name=a", "--data-dir",
                        "/tmp/x",    "--debug", "pos1",
                        "--count=9", "--",      "-notaflag"};
  ASSERT_TRUE(fs.Parse(9, argv).ok());
  EXPECT_EQ(name, "a");
  EXPECT_EQ(dir, "/tmp/x");
  EXPECT_TRUE(debug);
  EXPECT_EQ(count, 9u);
  EXPECT_EQ(fs.args(), (std::vector<std::string>{"pos1", "-notaflag"}));
  EXPECT_TRUE(fs.IsSet("name"));
}

TEST(FlagSetTest, Parse_UnknownFlagUsesGoWording) {
  FlagSet fs("lockd", "");
  const char* argv[] = {"lockd", "--nope"};
  absl::Status s = fs.Parse(2, argv);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "flag provided but not defined: -nope");
}

TEST(FlagSetTest, Parse_BadNumberNamesFlagAndValue) {
  uint64_t n = 0;
  FlagSet fs("lockd", "");
  fs.Uint64("n", &n, "n");
  const char* argv[] = {"lockd", "--n=abc"};
  absl::Status s = fs.Parse(2, argv);
  EXPECT_NE(s.message().find("invalid value \"abc\" for flag -n"),
            absl::string_view::npos);
  EXPECT_EQ(n, 0u);
}

TEST(FlagSetTest, Parse_GoDurations) {
  absl::Duration d = absl::Seconds(2);
  FlagSet fs("lockctl", "");
  fs.Duration("dial-timeout", &d, "");
  const char* ok[] = {"lockctl", "--dial-timeout=1m30s"};
  ASSERT_TRUE(fs.Parse(2, ok).ok());
  EXPECT_EQ(d, absl::Seconds(90));
  const char* bad[] = {"lockctl", "--dial-timeout=5"};
  EXPECT_FALSE(fs.Parse(2, bad).ok());
  EXPECT_EQ(d, absl::Seconds(90));
}

TEST(FlagSetTest, Parse_MissingValue) {
  std::string v;
  FlagSet fs("lockd", "");
  fs.String("v", &v, "v");
  const char* argv[] = {"lockd", "--v"};
  EXPECT_EQ(fs.Parse(2, argv).message(), "flag needs an argument: -v");
}

TEST(FlagSetTest, Parse_NotInterspersedStopsAtSubcommand) {
  std::string endpoints;
  FlagSet fs("lockctl", "");
  fs.String("endpoints", &endpoints, "");
  const char* argv[] = {"lockctl", "--endpoints=a:1", "member", "list",
                        "--hex"};
  ASSERT_TRUE(fs.Parse(5, argv, 1, /*interspersed=*/false).ok());
  EXPECT_EQ(fs.args(), (std::vector<std::string>{"member", "list", "--hex"}));
}

TEST(FlagSetTest, Parse_EnvironmentFillsUnsetFlagsOnly) {
  setenv("LOCKDTEST_DATA_DIR", "/from/env", 1);
  setenv("LOCKDTEST_NAME", "env-name", 1);
  std::string dir, name;
  FlagSet fs("lockd", "LOCKDTEST");
  fs.String("data-dir", &dir, "");
  fs.String("name", &name, "");
  const char* argv[] = {"lockd", "--name=cli"};
  ASSERT_TRUE(fs.Parse(2, argv).ok());
  EXPECT_EQ(dir, "/from/env");
  EXPECT_EQ(name, "cli");
}

}  // namespace
}  // namespace lockd
