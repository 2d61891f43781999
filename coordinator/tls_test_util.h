// For tests of TLS: a self-signed certificate for localhost and 127.0.0.1,
// made by the openssl command line as a user would make one.
#ifndef POTLUCK_COORDINATOR_TLS_TEST_UTIL_H_
#define POTLUCK_COORDINATOR_TLS_TEST_UTIL_H_

#include <cstdlib>
#include <string>

namespace potluck::testing_util {

// Writes the certificate to `cert` and its key to `key` (PEM). Returns the
// command that failed, or "" on success.
inline std::string MakeSelfSignedCertificate(const std::string& cert, const std::string& key) {
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " >/dev/null 2>&1";
  return std::system(command.c_str()) == 0 ? "" : command;
}

}  // namespace potluck::testing_util

#endif  // POTLUCK_COORDINATOR_TLS_TEST_UTIL_H_
