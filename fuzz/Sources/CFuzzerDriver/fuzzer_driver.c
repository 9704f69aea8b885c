/* Declarations only: see include/fuzzer_driver.h. */
