#include <iostream>

#include "bench/loadgen/loadgen.h"

int main(int argc, char** argv) {
  return lockd_bench::Main(argc, argv, std::cout, std::cerr);
}
