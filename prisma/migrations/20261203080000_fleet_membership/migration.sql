-- AlterTable
ALTER TABLE "hosts" ADD COLUMN     "reported_workloads" JSONB NOT NULL DEFAULT '[]';

-- CreateTable
CREATE TABLE "fleet_monitor" (
    "id" INTEGER NOT NULL DEFAULT 1,
    "epoch" BIGINT NOT NULL DEFAULT 0,
    "leader" TEXT,
    "brake_active" BOOLEAN NOT NULL DEFAULT false,
    "brake_reasons" JSONB NOT NULL DEFAULT '[]',
    "brake_detail" TEXT NOT NULL DEFAULT '',
    "brake_since" TIMESTAMP(3),
    "last_check_at" TIMESTAMP(3),
    "updated_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "fleet_monitor_pkey" PRIMARY KEY ("id")
);

-- The single row every monitor election bumps.
INSERT INTO "fleet_monitor" ("id") VALUES (1);
