#include "lockd/server/grpc_log.h"

#include "gtest/gtest.h"

namespace lockd {
namespace {

TEST(GrpcLogTest, HandshakeFailuresBecomeWarningsThatSayWhatToDo) {
  GrpcLogLine plain = TranslateGrpcLog(
      2, "src/core/tsi/ssl_transport_security.cc",
      "Handshake failed with fatal error SSL_ERROR_SSL: error:0A00010B:SSL "
      "routines::wrong version number.");
  EXPECT_EQ(plain.level, LogLevel::kWarning);
  EXPECT_EQ(plain.text.rfind("rejected a connection: TLS handshake failed "
                             "(wrong version number): the other side does "
                             "not speak TLS",
                             0),
            0u)
      << plain.text;

  GrpcLogLine no_cert = TranslateGrpcLog(
      2, "ssl_transport_security.cc",
      "Handshake failed with fatal error SSL_ERROR_SSL: error:0A0000C7:SSL "
      "routines::peer did not return a certificate.");
  EXPECT_NE(no_cert.text.find("give the client --cert and --key"),
            std::string::npos)
      << no_cert.text;

  GrpcLogLine http = TranslateGrpcLog(
      2, "ssl_transport_security.cc",
      "Handshake failed with fatal error SSL_ERROR_SSL: error:0A00009C:SSL "
      "routines::http request.");
  EXPECT_NE(http.text.find("--listen-metrics-urls"), std::string::npos)
      << http.text;

  // A reason without a hint is passed on as it is.
  GrpcLogLine other = TranslateGrpcLog(
      2, "ssl_transport_security.cc",
      "Handshake failed with fatal error SSL_ERROR_SSL: error:0A000000:SSL "
      "routines::something new.");
  EXPECT_EQ(other.level, LogLevel::kWarning);
  EXPECT_EQ(other.text,
            "rejected a connection: TLS handshake failed (something new)");
}

TEST(GrpcLogTest, OtherLinesKeepTheirSeverityAndNameTheirSource) {
  GrpcLogLine e =
      TranslateGrpcLog(2, "src/core/lib/iomgr/tcp_server.cc", "bind failed");
  EXPECT_EQ(e.level, LogLevel::kError);
  EXPECT_EQ(e.text, "bind failed (tcp_server.cc)");
  EXPECT_EQ(TranslateGrpcLog(1, "", "x").level, LogLevel::kInfo);
  EXPECT_EQ(TranslateGrpcLog(1, "", "x").text, "x");
  EXPECT_EQ(TranslateGrpcLog(0, "a.cc", "y").level, LogLevel::kDebug);
}

}  // namespace
}  // namespace lockd
