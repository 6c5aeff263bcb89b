-- AlterTable
ALTER TABLE "hosts" ADD COLUMN     "last_heartbeat_sent_at" TIMESTAMP(3);
