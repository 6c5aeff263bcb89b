// Builds (or finds in the cache) the microVM test image: Debian's cloud
// kernel and a busybox initramfs, with qemu-ga when the host has it (see
// libs/testing/src/images/microvm-image.ts).
//
//   npx tsx tools/images/build-microvm.ts [CACHE_DIR]
//
// Prints the image as JSON. CACHE_DIR defaults to <repo>/.cache/microvm;
// CORRAL_MICROVM_KERNEL_DEB=path/to/linux-image-*.deb skips the download.
import { ensureMicrovmImage, microvmImageUnavailableReason } from '../../libs/testing/src/images/microvm-image';

async function main() {
  const cacheDir = process.argv[2];
  const reason = microvmImageUnavailableReason(cacheDir);
  if (reason) {
    console.error(reason);
    process.exit(2);
  }
  const started = Date.now();
  const image = await ensureMicrovmImage(cacheDir);
  console.log(JSON.stringify({ ...image, ms: Date.now() - started }, null, 2));
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
